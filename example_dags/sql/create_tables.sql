-- Rendered by Jinja like any templated .sql file; run statement by statement.
DROP TABLE IF EXISTS daily_revenue;
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (
    order_id    integer PRIMARY KEY,
    customer    text    NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    ordered_on  date    NOT NULL
);
CREATE TABLE daily_revenue (
    ordered_on  date PRIMARY KEY,
    orders      integer NOT NULL,
    revenue     numeric(14, 2) NOT NULL,
    loaded_by   text NOT NULL  -- '{{ dag.dag_id }}'
);
