"""Packaging for kd_tf: partial knowledge distillation in TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="kd_tf",
    version="0.1.0",
    description=(
        "Understanding and Improving Knowledge Distillation (Tang et al., 2020) in TensorFlow 2 / Keras 3"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kd_tf", "kd_tf.*", "models", "models.*", "data", "data.*"]),
    py_modules=["run"],
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.12,<3.16",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.0",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "tensorboard>=2.16",
    ],
    extras_require={
        "digits": ["scikit-learn>=1.3"],
        "test": ["pytest>=8", "pytest-xdist>=3.2", "ruff>=0.6", "scikit-learn>=1.3"],
    },
    entry_points={"console_scripts": ["kd_tf=run:entry_point"]},
)
