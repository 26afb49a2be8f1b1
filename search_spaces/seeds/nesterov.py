# Nesterov momentum (Sutskever et al. 2013) as optax.sgd(lr, momentum=0.9, nesterov=True):
# m = g + 0.9 m, update = lr (g + 0.9 m).
def nesterov(g, w, m, lr, t):
    m = g + 0.9 * m
    u = g + 0.9 * m
    update = lr * u
    return update, m
