// pgjdbc reading a materialized dataset while its origin is down: a prepared
// statement with a parameter (extended protocol), as a BI tool sends it.
// args: port user password database
import java.sql.*;

public class OfflineCopy {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[3] + "?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2]);
             PreparedStatement ps = c.prepareStatement(
                 "SELECT count(*), sum(price) FROM copies.items WHERE id > ?")) {
            ps.setInt(1, 0);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                System.out.println("count " + rs.getLong(1) + " sum " + rs.getBigDecimal(2));
            }
        }
    }
}
