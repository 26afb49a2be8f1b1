# Plain stochastic gradient descent as optax.sgd(lr).
def sgd(g, w, lr, t):
    update = lr * g
    return update
