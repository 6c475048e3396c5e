package io.nbdtail.tools.online;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.nbdtail.volume.Sizes;

import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/** How the online commands print: the API's JSON as it is, or tables and {@code key: value} lines for people. */
public final class Output {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private Output() {
    }

    /** The API's JSON, indented: what {@code --json} prints. */
    public static void json(final PrintWriter out, final JsonNode node) {
        try {
            out.println(JSON.writeValueAsString(node));
        } catch (final JsonProcessingException e) {
            throw new UncheckedIOException(e);
        }
        out.flush();
    }

    /** Columns padded to the widest cell, two spaces apart, like {@code volume list}; the first row is the header. */
    public static void table(final PrintWriter out, final List<String[]> rows) {
        final int[] widths = new int[rows.get(0).length];
        for (final String[] row : rows) {
            for (int c = 0; c < row.length; c++) {
                widths[c] = Math.max(widths[c], row[c].length());
            }
        }
        for (final String[] row : rows) {
            final StringBuilder line = new StringBuilder();
            for (int c = 0; c < row.length; c++) {
                line.append(row[c]);
                if (c < row.length - 1) {
                    line.append(" ".repeat(widths[c] - row[c].length() + 2));
                }
            }
            out.println(line.toString().stripTrailing());
        }
        out.flush();
    }

    /** A text field, {@code ?} if the server did not send it; control characters would break lines. */
    static String text(final JsonNode node, final String field) {
        final JsonNode value = node.path(field);
        return value.isMissingNode() || value.isNull() ? "?" : oneLine(value.asText());
    }

    /** A timestamp field to the second ({@code 2026-01-02T03:04:05Z}); as sent if not one, {@code ?} if missing. */
    static String time(final JsonNode node, final String field) {
        final String text = text(node, field);
        try {
            return Instant.parse(text).truncatedTo(ChronoUnit.SECONDS).toString();
        } catch (final DateTimeParseException e) {
            return text;
        }
    }

    /** A byte count field for people ({@code 20 GiB}), {@code ?} if missing. */
    static String size(final JsonNode node, final String field) {
        final JsonNode value = node.path(field);
        return value.isNumber() ? Sizes.format(value.asLong()) : "?";
    }

    /** A byte count field in bytes and for people ({@code 21474836480 bytes (20 GiB)}), {@code ?} if missing. */
    static String bytes(final JsonNode node, final String field) {
        final JsonNode value = node.path(field);
        return value.isNumber() ? value.asLong() + " bytes (" + Sizes.format(value.asLong()) + ")" : "?";
    }

    static String yesNo(final JsonNode node, final String field) {
        final JsonNode value = node.path(field);
        return value.isBoolean() ? value.asBoolean() ? "yes" : "no" : "?";
    }

    static String oneLine(final String text) {
        return text.replaceAll("\\p{Cntrl}", " ");
    }

    /** A duration for people: {@code 7s}, {@code 3m12s}, {@code 2h05m}, {@code 3d04h}. */
    static String duration(final long seconds) {
        if (seconds < 60) {
            return Math.max(0, seconds) + "s";
        }
        if (seconds < 3600) {
            return seconds / 60 + "m" + String.format(Locale.ROOT, "%02d", seconds % 60) + "s";
        }
        if (seconds < 86400) {
            return seconds / 3600 + "h" + String.format(Locale.ROOT, "%02d", seconds / 60 % 60) + "m";
        }
        return seconds / 86400 + "d" + String.format(Locale.ROOT, "%02d", seconds / 3600 % 24) + "h";
    }

    /**
     * An access list ({@code Acl} of the API) in a few words: the networks, {@code server default (allow)} for
     * none set, {@code nobody (empty list)}.
     */
    static String acl(final JsonNode acl) {
        final JsonNode allow = acl.path("allow");
        if (allow.isMissingNode()) {
            return "?";
        }
        if (allow.isNull()) {
            final JsonNode policy = acl.path("effectiveDefault");
            return "server default (" + (policy.isTextual() ? policy.asText() + " everyone" : "?") + ")";
        }
        if (allow.isEmpty()) {
            return "nobody (empty list)";
        }
        final List<String> networks = new ArrayList<>();
        allow.forEach(n -> networks.add(oneLine(n.asText())));
        return String.join(", ", networks);
    }

    /** The clients of a volume as a table, or a line saying there are none. */
    static void clients(final PrintWriter out, final JsonNode clients, final String volume) {
        if (!clients.isArray() || clients.isEmpty()) {
            out.println("no clients connected to volume " + volume);
            out.flush();
            return;
        }
        final List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"ID", "ADDRESS", "SINCE", "READ", "WRITTEN", "REQUESTS", "IN-FLIGHT"});
        for (final JsonNode c : clients) {
            rows.add(new String[] {text(c, "id"), text(c, "address"), time(c, "since"), size(c, "bytesRead"),
                size(c, "bytesWritten"), text(c, "requests"), text(c, "inFlight")});
        }
        table(out, rows);
    }
}
