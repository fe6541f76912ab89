"""movinet: MoViNet video classification with DVC pipelines, Hydra configs and MLflow tracking.

Rooms (imports go one way: stages -> library; inference never imports training):
``movinet.models`` (architecture, weights), ``movinet.inference`` (export, streaming runtime),
``movinet.cli`` (the ``movinet`` command).
"""

__version__ = "0.1.0"
