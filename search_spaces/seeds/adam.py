# Adam (Kingma & Ba 2015) as optax.adam(lr): b1 0.9, b2 0.999, eps 1e-8, eps_root 0, bias-corrected moments.
def adam(g, w, m, v, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    mh = m / (1.0 - pow(0.9, t))
    vh = v / (1.0 - pow(0.999, t))
    u = mh / (sqrt(vh) + 1e-08)
    update = lr * u
    return update, m, v
