"""Helpers shared by the Airflow side of the provider (hook, operator, sensor, trigger)."""
