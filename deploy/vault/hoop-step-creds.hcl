path "database/creds/warehouse-*" { capabilities = ["read"] }
