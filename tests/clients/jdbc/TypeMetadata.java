// pgjdbc's type metadata: getSchemas (those both servers have), getTypeInfo (pgjdbc's
// type cache query) and getColumns on kinds.all_types, one line per column with the
// type name and java.sql.Types code.
// Run against Switchyard and PostgreSQL itself; the `column` lines must match.
// args: port user password database
import java.sql.*;

public class TypeMetadata {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[3] + "?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    String schema = rs.getString("TABLE_SCHEM");
                    if (schema.equals("kinds") || schema.equals("information_schema") || schema.equals("pg_catalog")) {
                        System.out.println("schema " + schema);
                    }
                }
            }
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) {
                    String name = rs.getString("TYPE_NAME");
                    if (name.equals("int4") || name.equals("uuid") || name.equals("_text")) {
                        System.out.println("typeinfo " + name + " " + rs.getInt("DATA_TYPE"));
                    }
                }
            }
            try (ResultSet rs = md.getColumns(null, "kinds", "all_types", null)) {
                while (rs.next()) {
                    System.out.println("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME")
                        + " " + rs.getInt("DATA_TYPE") + " " + rs.getInt("COLUMN_SIZE") + " "
                        + rs.getInt("DECIMAL_DIGITS") + " " + rs.getString("IS_NULLABLE"));
                }
            }
        }
    }
}
