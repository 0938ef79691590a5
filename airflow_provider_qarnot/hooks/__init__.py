"""Hooks: the only door from Airflow to the Qarnot client (`airflow_provider_qarnot.hooks.qarnot`)."""

#: The Airflow connection id used when none is given (kept here, light, for the trigger module).
DEFAULT_CONN_ID = "qarnot_default"
