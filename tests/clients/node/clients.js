// node-postgres against Switchyard, compared with PostgreSQL itself.
// usage: NODE_PATH=<node_modules> node clients.js SWITCHYARD_URL REFERENCE_URL
// Prints "ok <check>" per passed check; any failure exits non-zero.
const assert = require("assert/strict");
const { Client } = require("pg");
const Cursor = require("pg-cursor");

const [proxyUrl, referenceUrl] = process.argv.slice(2);

function ok(name) {
  console.log("ok " + name);
}

async function main() {
  const proxy = new Client({ connectionString: proxyUrl });
  const reference = new Client({ connectionString: referenceUrl });
  await proxy.connect();
  await reference.connect();

  // Parameters through the extended protocol (unnamed statements).
  const sql = "SELECT id, name, email, region, created_at FROM sales.customers WHERE region = $1 AND id < $2 ORDER BY id";
  for (const [region, below] of [["north", 30], ["east", 15]]) {
    const got = await proxy.query(sql, [region, below]);
    const want = await reference.query(sql, [region, below]);
    assert.deepEqual(got.rows, want.rows);
    assert.ok(got.rows.length > 0);
    assert.ok(got.rows[0].created_at instanceof Date);
  }
  ok("parameters");

  // A named statement: parsed once, executed with new values each time.
  const named = { name: "order_by_id", text: "SELECT id, amount, status FROM sales.orders WHERE id = $1" };
  for (let id = 1; id <= 6; id++) {
    const got = await proxy.query({ ...named, values: [id] });
    const want = await reference.query({ ...named, values: [id] });
    assert.deepEqual(got.rows, want.rows);
  }
  ok("named statements reused");

  // pg-cursor: reads through the portal row limit (Execute with max_rows).
  const cursor = proxy.query(new Cursor("SELECT i, i * 2 AS twice FROM generate_series(1, 50000) AS t(i)"));
  let rows = 0;
  let sum = 0;
  for (;;) {
    const batch = await cursor.read(1000);
    if (batch.length === 0) break;
    assert.ok(batch.length <= 1000, "more rows than asked for: " + batch.length);
    rows += batch.length;
    for (const r of batch) sum += Number(r.twice);
  }
  await cursor.close();
  assert.equal(rows, 50000);
  assert.equal(sum, 50000 * 50001);
  ok("pg-cursor streams 50000 rows in batches of 1000");

  // Errors carry SQLSTATE and the connection carries on.
  await assert.rejects(proxy.query("SELECT * FROM sales.nope"), (e) => e.code === "42P01");
  await assert.rejects(proxy.query("SELECT 1/0"), (e) => e.code === "22012");
  const after = await proxy.query("SELECT count(*)::int AS n FROM sales.customers");
  assert.equal(after.rows[0].n, 200);
  ok("errors carry SQLSTATE");

  await proxy.end();
  await reference.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
