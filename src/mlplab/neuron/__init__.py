"""The leaky integrate-and-fire neuron of the tutorial's bonus section."""
