// What pgjdbc's DatabaseMetaData (the path DBeaver, Metabase and other BI tools take)
// and a plain query show a governed role. Prints one fact per line for the Rust test
// (tests/tests/jdbc.rs) to check: `table s.t`, `column name type`, `row id|email|region`.
import java.sql.*;

public class GovernedMetadata {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/switchyard?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getTables(null, "sales", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    System.out.println("table " + rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
                }
            }
            try (ResultSet rs = md.getColumns(null, "sales", "customers", "%")) {
                while (rs.next()) {
                    System.out.println("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME"));
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, email, region FROM sales.customers WHERE id <= ? ORDER BY id")) {
                ps.setInt(1, 12);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        System.out.println("row " + rs.getInt(1) + "|" + rs.getString(2) + "|" + rs.getString(3));
                    }
                }
            }
            try (Statement st = c.createStatement()) {
                st.executeQuery("SELECT created_at FROM sales.customers");
                System.out.println("denied-column query succeeded");
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState());
            }
        }
    }
}
