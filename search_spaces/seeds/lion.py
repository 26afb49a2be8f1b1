# Lion (Chen et al. 2023) as optax.lion(lr): b1 0.9, b2 0.99, weight decay 1e-3 added before the lr scaling.
def lion(g, w, m, lr, t):
    c = interp(g, m, 0.9)
    m = interp(g, m, 0.99)
    u = sign(c) + 0.001 * w
    update = lr * u
    return update, m
