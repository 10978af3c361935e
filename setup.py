from setuptools import find_packages, setup

setup(
    name="bitat_tf",
    version="0.1.0",
    description="BiTAT binarization of trained Keras models, exported through TFLite and Larq Compute Engine",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bitat_tf", "bitat_tf.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "larq==0.14.0",
        "larq-compute-engine==0.16.0",
        "tensorflow-model-optimization==0.8.1",
        "numpy<2",
        "scikit-learn>=1.3",
    ],
    extras_require={"tfds": ["tensorflow-datasets"], "test": ["pytest"]},
    entry_points={"console_scripts": ["bitat-tf=bitat_tf.cli:main"]},
)
