"""The tabular CPI simulator (numpy/scipy only; never imports torch, transformers or respo.llm).

Modules: ``mdp`` (layered MDPs and toy families), ``exact`` (V, Q, A, d^pi, G_tau, p_pi),
``cpi`` (CPI-RR / CPI-CARO / approximate / no-reset steps, exact and sample-based),
``bounds`` (the bound expressions), ``sampler`` (``TabularSampler``, the seam's Sampler over
integer states), ``softmax`` (the softmax-policy bridge through the shared buffer/advantages),
``studies`` (the functions behind the theory figures).
"""
