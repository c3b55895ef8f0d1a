path "identity/oidc/token/airflow-step" { capabilities = ["read"] }
