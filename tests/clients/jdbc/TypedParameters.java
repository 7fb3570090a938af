// pgjdbc parameters of each everyday type, bound with their Java types and run 7 times
// (pgjdbc switches to a named server-side statement from the 5th run), each result
// column read back as its Java type; then the SQLSTATEs of failing statements.
// Prints `run <i> <values...>` and `sqlstate <code>` lines.
import java.math.BigDecimal;
import java.sql.*;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;

public class TypedParameters {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/switchyard?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            String sql = "SELECT CAST(? AS integer) + 1, CAST(? AS bigint) * 2, CAST(? AS text) || '!', "
                + "CAST(? AS numeric(10,2)) + 0.5, CAST(? AS timestamptz), CAST(? AS date), NOT CAST(? AS boolean)";
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                for (int i = 1; i <= 7; i++) {
                    ps.setInt(1, 40 + i);
                    ps.setLong(2, 5_000_000_000L + i);
                    ps.setString(3, "run " + i);
                    ps.setBigDecimal(4, new BigDecimal("12.25").add(BigDecimal.valueOf(i)));
                    ps.setObject(5, OffsetDateTime.of(2024, 2, 29, 12, 30, i, 0, ZoneOffset.UTC));
                    ps.setObject(6, LocalDate.of(2024, 3, i));
                    ps.setBoolean(7, i % 2 == 0);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        System.out.println("run " + i + " " + rs.getInt(1) + " " + rs.getLong(2) + " "
                            + rs.getString(3) + " " + rs.getBigDecimal(4) + " "
                            + rs.getObject(5, OffsetDateTime.class).toInstant() + " "
                            + rs.getObject(6, LocalDate.class) + " " + rs.getBoolean(7));
                    }
                }
            }
            // uuid and bytea parameters against the origin's columns, read back as their
            // Java types (UUID, byte[], PGInterval text), 7 runs each.
            String typed = "SELECT id, u, by, iv FROM kinds.all_types WHERE u = ? AND by = ?";
            try (PreparedStatement ps = c.prepareStatement(typed)) {
                for (int i = 1; i <= 7; i++) {
                    ps.setObject(1, java.util.UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
                    ps.setBytes(2, new byte[] {(byte) 0xde, (byte) 0xad, (byte) 0xbe, (byte) 0xef});
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            byte[] b = rs.getBytes(3);
                            System.out.println("typed " + i + " " + rs.getInt(1) + " "
                                + rs.getObject(2, java.util.UUID.class) + " " + b.length + " "
                                + rs.getString(4));
                        }
                    }
                }
            }
            String[] failing = {
                "SELECT * FROM sales.nope",
                "SELECT nope FROM sales.orders",
                "SELECT 1 / 0",
                "SELEC 1",
                "SELECT * FROM sales.secrets",
            };
            for (String f : failing) {
                try (Statement st = c.createStatement()) {
                    st.executeQuery(f);
                    System.out.println("sqlstate none");
                } catch (SQLException e) {
                    System.out.println("sqlstate " + e.getSQLState());
                }
            }
        }
    }
}
