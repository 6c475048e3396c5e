package io.nbdtail.volume;

import java.util.Locale;

/** Sizes as people write them: {@code 20G}, {@code 512M}, {@code 20GiB}, {@code 1048576}. Units are powers of 1024. */
public final class Sizes {
    private static final String UNITS = "KMGTP";

    private Sizes() {
    }

    /**
     * Parses a size.
     *
     * @throws IllegalArgumentException naming the input and the accepted forms.
     */
    public static long parse(final String text) {
        final String s = text == null ? "" : text.trim();
        int end = 0;
        while (end < s.length() && Character.isDigit(s.charAt(end))) {
            end++;
        }
        if (end == 0) {
            throw invalid(text);
        }
        String unit = s.substring(end).toUpperCase(Locale.ROOT);
        if (unit.endsWith("IB")) {
            unit = unit.substring(0, unit.length() - 2);
        } else if (unit.length() == 2 && unit.endsWith("B")) {
            unit = unit.substring(0, 1);
        } else if (unit.equals("B")) {
            unit = "";
        }
        final int shift;
        if (unit.isEmpty()) {
            shift = 0;
        } else if (unit.length() == 1 && UNITS.indexOf(unit.charAt(0)) >= 0) {
            shift = 10 * (UNITS.indexOf(unit.charAt(0)) + 1);
        } else {
            throw invalid(text);
        }
        final long number;
        try {
            number = Long.parseLong(s.substring(0, end));
        } catch (final NumberFormatException e) {
            throw new IllegalArgumentException("size '" + text + "' is too large");
        }
        if (shift > 0 && number > (Long.MAX_VALUE >> shift)) {
            throw new IllegalArgumentException("size '" + text + "' is too large");
        }
        return number << shift;
    }

    private static IllegalArgumentException invalid(final String text) {
        return new IllegalArgumentException("invalid size '" + text + "': use a number of bytes or a whole number"
            + " with K, M, G, T or P (powers of 1024), for example 20G");
    }

    /** {@code 20 GiB}, {@code 1.5 GiB}, {@code 512 B}. */
    public static String format(final long bytes) {
        if (bytes < 1024) {
            return bytes + " B";
        }
        int unit = -1;
        double value = bytes;
        while (value >= 1024 && unit < UNITS.length() - 1) {
            value /= 1024;
            unit++;
        }
        final String number = value == Math.rint(value) ? Long.toString((long) value)
            : String.format(Locale.ROOT, "%.1f", value);
        return number + " " + UNITS.charAt(unit) + "iB";
    }
}
