"""Development tools: a real local Airflow stack and the render demo that runs on it."""
