"""cnnc: a compiler, analyser, trainer and visualiser for convolutional networks.

The four stages are subpackages: `cnnc.dsl` (grammar, parser, AST),
`cnnc.compiler` (elaboration, op specs, analyses, passes), `cnnc.runtime`
(NumPy kernels, execution plan, training) and `cnnc.viz` (diagrams).
"""
__version__ = "0.1.0"
