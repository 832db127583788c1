# Production-like image: the official Airflow image plus this package's pinned requirements.
# The DAGs, plugins and config are mounted by docker-compose.yaml (or baked in with the COPY lines below).
FROM apache/airflow:3.3.2-python3.11

# requirements.txt pins apache-airflow[statsd], the client [metrics] statsd_on needs.
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root config/ /opt/airflow/config/
