// pgjdbc with autosave=always, autocommit off: a failing statement inside a
// transaction is rolled back to pgjdbc's savepoint and the transaction goes on.
// args: port user password database
import java.sql.*;

public class Autosave {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[3] + "?sslmode=disable&autosave=always";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                try {
                    st.executeQuery("SELECT * FROM sales.nope");
                    System.out.println("failed none");
                } catch (SQLException e) {
                    System.out.println("failed " + e.getSQLState());
                }
                try (ResultSet rs = st.executeQuery("SELECT count(*) FROM sales.orders")) {
                    rs.next();
                    System.out.println("after " + rs.getLong(1));
                }
            }
            c.commit();
            System.out.println("committed");
        }
    }
}
