"""Will it fit: the bytes a training step holds on each device, from the checked network alone.

`walk` replays the lowered module's forward on buffers (what each op makes and keeps for
backward, from the registry's `saves`); `plan` turns that into weights, gradients, momentum,
activations kept for backward and the peak of a step, per layer and per device, and the
largest batch a memory budget holds.
"""
