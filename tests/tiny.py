"""The tiny synthetic preset every runner test starts from (no TensorFlow import here)."""

# 8 classes in 2 super-classes, a few hundred examples, 2 epochs, narrow models. KD-rel's default a and b do
# not fit 4 classes per super-class: a test that trains KD-rel passes its own.
SYNTHETIC = [
    "--num_classes=8",
    "--num_superclasses=2",
    "--dim=16",
    "--difficulty=1",
    "--train_examples=256",
    "--validation_examples=128",
    "--test_examples=128",
    "--batch_size=64",
    "--epochs=2",
    "--teacher_width=16",
    "--student_width=4",
    "--progress=none",
    "--jit_compile=false",
    "--jobs=1",  # a table's cells in this process: tests that use other values say so
]
