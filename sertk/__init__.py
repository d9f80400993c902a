"""sertk: a speech emotion recognition toolkit with Kaldi-style recipes for IEMOCAP."""

__version__ = "0.2.0"
