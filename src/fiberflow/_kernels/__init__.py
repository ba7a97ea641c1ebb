"""Private numba kernels. Imported lazily by the modules that use them; each kernel has a
plain-numpy reference beside its public wrapper, and a test comparing the two."""
