// pgjdbc's everyday path: one PreparedStatement run 7 times (pgjdbc switches to a
// named server-side statement from the 5th run), and a 100 000-row result read with
// autocommit off and setFetchSize(1000), i.e. through portal row limits.
// Prints `run <i> <order id> <product> <price> <ordered_at>` and `streamed <n>`.
import java.sql.*;

public class PreparedAndStreaming {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/switchyard?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT o.id, p.name, p.price, o.ordered_at FROM sales.orders o "
                    + "JOIN inventory.products p ON p.id = o.product_id WHERE o.id = ? AND p.name <> ?")) {
                for (int i = 1; i <= 7; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "nothing");
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            System.out.println("run " + i + " " + rs.getInt(1) + " " + rs.getString(2)
                                + " " + rs.getBigDecimal(3) + " " + rs.getTimestamp(4).toInstant());
                        }
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(1000);
                long n = 0;
                long sum = 0;
                try (ResultSet rs = st.executeQuery("SELECT i, i * 2 FROM generate_series(1, 100000) t(i)")) {
                    while (rs.next()) {
                        n++;
                        sum += rs.getLong(2);
                    }
                }
                System.out.println("streamed " + n + " " + sum);
            }
            c.commit();
        }
    }
}
