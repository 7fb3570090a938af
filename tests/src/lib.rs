//! Switchyard's end-to-end tests live in `tests/tests/` and `.slt` files in `tests/slt/`;
//! run them with `scripts/test`, which starts the PostgreSQL origins they need.
