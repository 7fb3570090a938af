// pgjdbc's key and index metadata (DBeaver's and Metabase's ER diagrams and table
// views): getPrimaryKeys, getImportedKeys, getExportedKeys, getIndexInfo on the sales
// tables. Prints one line per row for tests/tests/jdbc.rs:
// `pk table column seq name`, `fk pktable.pkcolumn fktable.fkcolumn seq name pkname`,
// `index table name non_unique position column`.
import java.sql.*;

public class KeysAndIndexes {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/switchyard?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            DatabaseMetaData md = c.getMetaData();
            for (String table : new String[] {"customers", "orders"}) {
                try (ResultSet rs = md.getPrimaryKeys(null, "sales", table)) {
                    while (rs.next()) {
                        System.out.println("pk " + rs.getString("TABLE_NAME") + " " + rs.getString("COLUMN_NAME")
                                + " " + rs.getInt("KEY_SEQ") + " " + rs.getString("PK_NAME"));
                    }
                }
            }
            try (ResultSet rs = md.getImportedKeys(null, "sales", "orders")) {
                printKeys("imported", rs);
            }
            try (ResultSet rs = md.getExportedKeys(null, "sales", "customers")) {
                printKeys("exported", rs);
            }
            for (String table : new String[] {"customers", "orders"}) {
                try (ResultSet rs = md.getIndexInfo(null, "sales", table, false, false)) {
                    while (rs.next()) {
                        System.out.println("index " + rs.getString("TABLE_NAME") + " " + rs.getString("INDEX_NAME")
                                + " " + rs.getBoolean("NON_UNIQUE") + " " + rs.getInt("ORDINAL_POSITION")
                                + " " + rs.getString("COLUMN_NAME"));
                    }
                }
            }
        }
    }

    static void printKeys(String kind, ResultSet rs) throws SQLException {
        while (rs.next()) {
            System.out.println(kind + " " + rs.getString("PKTABLE_NAME") + "." + rs.getString("PKCOLUMN_NAME")
                    + " " + rs.getString("FKTABLE_NAME") + "." + rs.getString("FKCOLUMN_NAME")
                    + " " + rs.getInt("KEY_SEQ") + " " + rs.getString("FK_NAME") + " " + rs.getString("PK_NAME"));
        }
    }
}
