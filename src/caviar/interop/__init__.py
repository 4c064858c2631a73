"""caviar and the tools around it: Optuna studies in and out, MLflow and TensorBoard loggers.

- ``caviar.interop.optuna_io``: ``import_optuna_study`` / ``export_optuna_study`` (``caviar import-optuna``,
  ``caviar export --format optuna``); needs optuna (``caviar[tpe]``).
- ``caviar.interop.loggers``: ``MLflowLogger`` (``caviar[mlflow]``) and ``TensorBoardLogger``
  (``caviar[tensorboard]``), callbacks for the estimator and for studies.

Nothing here is imported by caviar itself; each module loads its library when used.
"""
