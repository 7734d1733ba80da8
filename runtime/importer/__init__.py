"""Stage 3 (runtime), import: an ONNX model brought into cnnc as a readable `.cnn` file and a checkpoint.

`cnnc import model.onnx -o net.cnn` (importer.py) reads the model (reader.py),
folds its constants and follows its shapes while turning ONNX nodes into cnnc
layers (lift.py, values.py), recognising the idioms exporters write for one
layer by each operator's rule (rules.py); finds the model's repeated
structures and folds them into blocks with parameters and `* N` (blocks.py),
writes the text (writer.py), compiles it back and saves the weights under the
compiled names as a cnnc checkpoint. This part may import the compiler, the
dsl and the checkpoint contract (runtime/checkpoint.py), nothing else of the
runtime; it hands on no names (import from the module that defines them).
"""
