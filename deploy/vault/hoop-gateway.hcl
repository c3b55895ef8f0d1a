path "auth/token/create" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/leases/revoke/*" { capabilities = ["update"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "transit/sign/ledger-checkpoint" { capabilities = ["update"] }
path "transit/keys/ledger-checkpoint" { capabilities = ["read"] }
path "secret/data/airflow-hoop/masking/*" { capabilities = ["read"] }
