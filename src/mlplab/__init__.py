"""mlplab: the NMA MLP tutorial as a research library and a Lightning + Hydra template.

The science layer (``mlplab.data``, ``mlplab.models``, ``mlplab.approx``, ``mlplab.neuron``,
``mlplab.viz``) is plain PyTorch and never imports Hydra; ``mlplab.tasks`` wires it to configs.
"""

__version__ = "0.1.0"
