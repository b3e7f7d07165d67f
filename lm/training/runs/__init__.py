"""``lm runs`` (:mod:`.cli`): the resolved training runs of a pipeline config.

A package of its own so that the command's code version (:mod:`lm.codeversion`: per entry
module) is not ``lm train``'s: resolution (presets, the sweep grid, resource estimates)
stays out of what a change to training reruns.
"""
