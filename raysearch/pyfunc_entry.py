"""The code MLflow runs to load a registered raysearch model ("models from code": no pickle).

``raysearch promote`` logs this file as the pyfunc model's code; MLflow executes it on load.
"""

import mlflow

from raysearch.serving import HierarchicalClassifierModel

mlflow.models.set_model(HierarchicalClassifierModel())
