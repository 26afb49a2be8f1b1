# AdaGrad (Duchi et al. 2011) as optax.adagrad(lr): initial_accumulator_value 0.1, eps 1e-7.
# State starts at zero, so relu(2 - t) * 0.1 adds the initial 0.1 on step 1 only: s is then
# optax's accumulator exactly.
def adagrad(g, w, s, lr, t):
    s = s + relu(2.0 - t) * 0.1
    s = square(g) + s
    u = rsqrt(s + 1e-07) * g
    update = lr * u
    return update, s
