"""Built-in training hooks (``vista2d.hooks``): ``mlflow`` (:mod:`.tracking`) logs a run to MLflow,
``early_stopping`` (:mod:`.early_stopping`) ends training when validation AP stops improving."""
