# AdamW (Loshchilov & Hutter 2019) as optax.adamw(lr): b1 0.9, b2 0.999, eps 1e-8, weight decay 1e-4
# added to the Adam direction before the lr scaling.
def adamw(g, w, m, v, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    mh = m / (1.0 - pow(0.9, t))
    vh = v / (1.0 - pow(0.999, t))
    u = mh / (sqrt(vh) + 1e-08)
    u = u + 0.0001 * w
    update = lr * u
    return update, m, v
