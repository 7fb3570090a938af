#!/usr/bin/env python3
"""Python clients against Switchyard, compared with PostgreSQL itself.

usage: clients.py SWITCHYARD_DSN REFERENCE_DSN
Prints "ok <check>" per passed check; any failure raises (non-zero exit).
"""
import datetime as dt
import decimal
import sys

import psycopg
import psycopg2
import psycopg2.errors
import sqlalchemy as sa
from sqlalchemy import orm

proxy_dsn, reference_dsn = sys.argv[1], sys.argv[2]


def ok(name):
    print("ok", name, flush=True)


def rows(dsn, sql, params=None, **kw):
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(sql, params, **kw).fetchall()


# psycopg 3 ------------------------------------------------------------------
ORDER = "SELECT id, customer_id, amount, status, ordered_at FROM sales.orders WHERE id = %s"
with psycopg.connect(proxy_dsn, autocommit=True) as c:
    for i in range(1, 8):  # prepared by psycopg from the first execution (prepare=True)
        got = c.execute(ORDER, (i,), prepare=True).fetchall()
        assert got == rows(reference_dsn, ORDER, (i,)), (i, got)
    assert isinstance(got[0][2], decimal.Decimal) and got[0][4].tzinfo is not None, got
ok("psycopg3 prepared statement with parameters, 7 runs")

with psycopg.connect(proxy_dsn, autocommit=True) as c:
    cur = c.cursor(binary=True)
    sql = "SELECT id, name, email, region, created_at FROM sales.customers WHERE id IN (%s, %s, %s) ORDER BY id"
    got = cur.execute(sql, (3, 7, 14)).fetchall()
    assert got == rows(reference_dsn, sql, (3, 7, 14), binary=True), got
    assert got[1][2] is None, got  # every 7th e-mail is NULL
    got = c.execute("SELECT %b::int8 + 1, %b::text || 'y', %b::numeric * 2, %b::bool, %b::date",
                    (41, "x", decimal.Decimal("1.25"), True, dt.date(2024, 2, 29))).fetchone()
    assert got == (42, "xy", decimal.Decimal("2.50"), True, dt.date(2024, 2, 29)), got
ok("psycopg3 binary results and binary parameters")

with psycopg.connect(proxy_dsn) as c:
    with c.cursor(name="big") as cur:
        cur.itersize = 5000
        cur.execute("SELECT i, i * 2 FROM generate_series(1, 100000) AS t(i)")
        n = total = 0
        for i, j in cur:
            n += 1
            total += j
    assert (n, total) == (100000, 100001 * 100000), (n, total)
ok("psycopg3 server-side cursor streams 100000 rows")

# psycopg2 -------------------------------------------------------------------
c2 = psycopg2.connect(proxy_dsn)
cur = c2.cursor("stream")
cur.itersize = 2000
cur.execute("SELECT i FROM generate_series(1, 100000) AS t(i)")
n = sum(1 for _ in cur)
cur.close()
c2.commit()
assert n == 100000, n
ok("psycopg2 named cursor streams 100000 rows")

cur = c2.cursor()
try:
    cur.execute("SELECT * FROM sales.nope")
    raise AssertionError("no error")
except psycopg2.errors.UndefinedTable as e:
    assert e.pgcode == "42P01", e.pgcode
c2.rollback()
cur.execute("SELECT count(*) FROM sales.orders WHERE status = %(s)s", {"s": "paid"})
(n,) = cur.fetchone()
assert n == rows(reference_dsn, "SELECT count(*) FROM sales.orders WHERE status = 'paid'")[0][0]
c2.close()
ok("psycopg2 errors carry SQLSTATE and the session recovers")

# psycopg 3 nested transactions are savepoints: a failure inside the inner one is
# rolled back to its savepoint and the outer transaction goes on.
with psycopg.connect(proxy_dsn) as c:
    with c.transaction():
        try:
            with c.transaction():
                c.execute("SELECT * FROM sales.nope")
        except psycopg.errors.UndefinedTable:
            pass
        (n,) = c.execute("SELECT count(*) FROM sales.orders").fetchone()
    assert n == rows(reference_dsn, "SELECT count(*) FROM sales.orders")[0][0], n
ok("psycopg3 nested transaction recovers from an error")

# Pipeline mode: the statements after a failing one are skipped until Sync, then the
# session goes on.
with psycopg.connect(proxy_dsn, autocommit=True) as c:
    try:
        with c.pipeline():
            c.execute("SELECT 1")
            c.execute("SELECT * FROM sales.nope")
            c.execute("SELECT 2")
        raise AssertionError("no error from the pipeline")
    except psycopg.errors.UndefinedTable:
        pass
    assert c.execute("SELECT 3").fetchone() == (3,)
    with c.pipeline():
        curs = [c.execute("SELECT %s::int AS v", [i]) for i in range(5)]
    assert [x.fetchone()[0] for x in curs] == list(range(5))
ok("psycopg3 pipeline mode recovers from an error at Sync")

# SQLAlchemy 2 ---------------------------------------------------------------
engine = sa.create_engine(proxy_dsn.replace("postgresql://", "postgresql+psycopg://"))
insp = sa.inspect(engine)
assert {"customers", "orders"} <= set(insp.get_table_names(schema="sales")), insp.get_table_names(schema="sales")
assert {"profiles", "events"} <= set(insp.get_table_names(schema="shop")), insp.get_table_names(schema="shop")
assert {"sales", "shop"} <= set(insp.get_schema_names()), insp.get_schema_names()
ok("SQLAlchemy inspect: schema and table names")

# Keys, indexes, NOT NULL and defaults are the origin's (compared with PostgreSQL's own).
ref_insp = sa.inspect(sa.create_engine(reference_dsn.replace("postgresql://", "postgresql+psycopg://")))
for table in ("customers", "orders"):
    got = insp.get_pk_constraint(table, schema="sales")
    want = ref_insp.get_pk_constraint(table, schema="sales")
    assert (got["name"], got["constrained_columns"]) == (want["name"], want["constrained_columns"]), (got, want)
    got = insp.get_foreign_keys(table, schema="sales")
    want = ref_insp.get_foreign_keys(table, schema="sales")
    key = lambda fks: sorted((f["name"], f["constrained_columns"], f["referred_schema"], f["referred_table"], f["referred_columns"]) for f in fks)
    assert key(got) == key(want), (got, want)
    got = insp.get_indexes(table, schema="sales")
    want = ref_insp.get_indexes(table, schema="sales")
    key = lambda ixs: sorted((i["name"], i["unique"], i["column_names"]) for i in ixs)
    assert key(got) == key(want), (got, want)
    got = insp.get_columns(table, schema="sales")
    want = ref_insp.get_columns(table, schema="sales")
    key = lambda cols: [(c["name"], c["nullable"], c["default"]) for c in cols]
    assert key(got) == key(want), (got, want)
ok("SQLAlchemy inspect: keys, indexes, nullable and defaults")


class Base(orm.DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = {"schema": "sales"}
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.Text)
    region = sa.Column(sa.Text)


with orm.Session(engine) as s:
    got = [(x.id, x.name) for x in s.scalars(sa.select(Customer).where(Customer.region == "north").order_by(Customer.id).limit(3))]
    assert got == [(4, "customer 4"), (8, "customer 8"), (12, "customer 12")], got
    n = s.scalar(sa.select(sa.func.count()).select_from(Customer).where(Customer.name.like("customer 1%")))
    assert n == rows(reference_dsn, "SELECT count(*) FROM sales.customers WHERE name LIKE 'customer 1%'")[0][0], n
ok("SQLAlchemy ORM queries")
