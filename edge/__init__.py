"""maskwatch: count people passing a camera and how many wear a face mask, on the edge."""

__version__ = "0.1.0"
