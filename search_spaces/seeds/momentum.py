# Heavy-ball momentum (Polyak 1964) as optax.sgd(lr, momentum=0.9): m = g + 0.9 m, update = lr m.
def momentum(g, w, m, lr, t):
    m = g + 0.9 * m
    update = lr * m
    return update, m
