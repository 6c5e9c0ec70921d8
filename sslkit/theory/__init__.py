"""The paper's theory, in closed form or exact computation (numpy; torch only for the eNTK).

- ``linear``: the linear model of Sec. 4 (Prop. 4.1, Eq. 16, App. C) and its gradient-descent check;
- ``kernel``: the kernelised theory of Sec. 5 (K_Gamma, predicted embeddings, alignment a(P, Q));
- ``ntk``: the empirical neural tangent kernel of a network (App. E); ``per_sample``: its per-sample
  gradients from one batched forward + backward, layer by layer;
- ``alignment``: trained embeddings against the kernel theory (Tables 1-2);
- ``landscapes``, ``landscape_experiments``: the modewise losses of App. F-G, the sharpened loss solved
  exactly, and their gradient-descent checks on the linear model (Figs. 8-9).
"""
