# AdaBelief (Zhuang et al. 2020) as optax.adabelief(lr): b1 0.9, b2 0.999, eps 1e-16, eps_root 1e-16
# added to v every step; the prediction error g - m uses the new m.
def adabelief(g, w, m, v, lr, t):
    m = interp(g, m, 0.9)
    e = g - m
    v = interp(square(e), v, 0.999)
    v = v + 1e-16
    mh = m / (1.0 - pow(0.9, t))
    vh = v / (1.0 - pow(0.999, t))
    u = mh / (sqrt(vh) + 1e-16)
    update = lr * u
    return update, m, v
