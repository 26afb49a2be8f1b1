"""Distillation of a learned drift into a closed form (``discover distill``).

A learned drift network (LPO / TA-LPO, from an RL-objective search) is replaced by a short program in
discover's drift language (:mod:`discover.language.drift_program`: inputs r, A, n/N, log N; the elementwise
ops of :mod:`discover.language.ops`), found by regularized evolution and checked in two funnel stages:

1. fitness 1, every candidate: the error of the program's drift and of its slope d drift / d r against the
   network's, on states PPO visits when trained with the network (recorded from real runs on the drift's
   env and horizon: :mod:`.samples`);
2. fitness 2, the few best distinct programs: PPO trained with the closed form on the same env, horizon and
   seeds; its normalized return against the network's (:mod:`.fitness`).

The constants of the best programs are then refined with an evosax strategy on fitness 1. Every program
satisfies the drift constraints by construction (``drift = min(relu(f), cap (r-1)^2)``; see
:func:`discover.language.drift_program.constrain`).

Modules: ``config`` (schema), ``mutation`` (start programs, mutations), ``samples`` (the source drift and its
recorded states), ``fitness`` (fitness 1 and the RL check), ``state`` (state, checkpoint encoding), ``steps``
(generations, funnel, refinement), ``export`` (the .py module and the JSON program), ``figures`` (drift
surfaces), ``search`` (the :class:`~discover.shared.runner.Search` the runner drives).
"""
