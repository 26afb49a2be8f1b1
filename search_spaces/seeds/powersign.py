# PowerSign (Bello et al. 2017, Neural Optimizer Search): alpha = e, f(t) = 1, m = 0.1 g + 0.9 m;
# update = lr exp(sign(g) sign(m)) g.
def powersign(g, w, m, lr, t):
    m = interp(g, m, 0.9)
    a = exp(sign(g) * sign(m))
    update = lr * (a * g)
    return update, m
