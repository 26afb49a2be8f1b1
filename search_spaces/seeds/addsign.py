# AddSign (Bello et al. 2017, Neural Optimizer Search): alpha = 1, f(t) = 1, m = 0.1 g + 0.9 m;
# update = lr (1 + sign(g) sign(m)) g.
def addsign(g, w, m, lr, t):
    m = interp(g, m, 0.9)
    a = 1.0 + sign(g) * sign(m)
    update = lr * (a * g)
    return update, m
