"""respo: credit assignment with resets in language-model reasoning."""

__version__ = "0.1.0"
