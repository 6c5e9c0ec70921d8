"""SSL training: networks, losses, one class per method, optimisers, augmentations, the engine.

- ``networks``: ResNet encoders, projectors/predictors, small init (App. D.2);
- ``losses``: one pure function per loss;
- ``methods``: one ``Method`` class per SSL method, found through one registry;
- ``optim``: SGD/LARS and learning-rate schedules;
- ``augment``: batched on-device augmentations;
- ``speedup_variants``: the App. G loss and gradient modifications;
- ``engine``: ``train()`` (resumable, checkpointed) and ``load_checkpoint()``.
"""
