SELECT g AS n, 'row ' || g AS label FROM generate_series(1, {{ params.limit }}) AS g ORDER BY g
