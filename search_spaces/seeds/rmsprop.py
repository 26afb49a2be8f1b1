# RMSProp (Tieleman & Hinton 2012) as optax.rmsprop(lr): decay 0.9, eps 1e-8 inside the rsqrt,
# no momentum, not centered.
def rmsprop(g, w, v, lr, t):
    v = interp(square(g), v, 0.9)
    u = rsqrt(v + 1e-08) * g
    update = lr * u
    return update, v
