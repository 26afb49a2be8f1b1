# AdaGrad-Norm (Ward, Wu & Bottou 2019), the base method of AdAdaGrad (Lau, Liu & Kolar, "AdAdaGrad:
# Adaptive Batch Size Schemes for Adaptive Gradient Methods"): one scalar step size for the whole tree,
# b^2 <- b^2 + ||g||^2 (global norm over every tensor), update = lr g / b; b starts at 0 (a zero gradient
# on step 1 gives a zero step: the language's division by 0 is 0). s holds b^2 (the same in every entry).
# AdAdaGrad's adaptive batch-size schedule is out of scope: the trainer runs fixed shapes (a masked,
# variable batch would be a later step), so this is AdaGrad-Norm at the task's fixed batch size.
def adagradnorm(g, w, s, lr, t):
    s = s + square(global_norm(g))
    u = g / sqrt(s)
    update = lr * u
    return update, s
