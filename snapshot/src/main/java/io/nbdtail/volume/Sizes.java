package io.nbdtail.volume;

import java.util.Locale;

/**
 * Byte counts as people write and read them. Units are powers of 1024 throughout: {@code 20G} and
 * {@code 20GiB} are both 20 × 2^30 bytes.
 */
public final class Sizes {
    /** Units {@link #parse} accepts, in order: K = 2^10 ... P = 2^50. */
    private static final String UNITS = "KMGTP";
    /** Units {@link #format} prints; E only shows up near the 2^62 limit. */
    private static final String FORMAT_UNITS = "KMGTPE";

    private Sizes() {
    }

    /**
     * Parses a whole number of bytes, optionally followed by a unit: {@code 1048576}, {@code 512K},
     * {@code 20G}, {@code 20g}, {@code 20GiB}, {@code 512B}. Fractions ({@code 1.5T}) are refused, and so is
     * {@code 20GB}, which many people read as 20 × 10^9.
     *
     * @throws IllegalArgumentException naming the input and the accepted forms.
     */
    public static long parse(final String text) {
        if (text == null) {
            throw invalid("", "");
        }
        final String s = text.strip();
        int digits = 0;
        while (digits < s.length() && s.charAt(digits) >= '0' && s.charAt(digits) <= '9') {
            digits++;
        }
        if (digits == 0) {
            throw invalid(text, s.startsWith("-") ? " (sizes cannot be negative)" : "");
        }
        final String unit = s.substring(digits).strip().toUpperCase(Locale.ROOT);
        if (unit.startsWith(".") || unit.startsWith(",")) {
            throw invalid(text, " (whole numbers only: write 1536M rather than 1.5G)");
        }
        final int shift = shift(text, unit);
        final long number;
        try {
            number = Long.parseLong(s.substring(0, digits));
        } catch (final NumberFormatException e) {
            throw tooLarge(text);
        }
        if (number > Long.MAX_VALUE >> shift) {
            throw tooLarge(text);
        }
        return number << shift;
    }

    /** The power of two {@code unit} stands for. */
    private static int shift(final String text, final String unit) {
        if (unit.isEmpty() || unit.equals("B")) {
            return 0;
        }
        final int index = UNITS.indexOf(unit.charAt(0));
        if (index < 0) {
            throw invalid(text, "");
        }
        final String rest = unit.substring(1);
        if (rest.isEmpty() || rest.equals("IB")) {
            return 10 * (index + 1);
        }
        if (rest.equals("B")) {
            throw invalid(text, " ('" + unit.charAt(0) + "B' is ambiguous: write " + unit.charAt(0) + " or "
                + unit.charAt(0) + "iB for powers of 1024)");
        }
        throw invalid(text, "");
    }

    private static IllegalArgumentException invalid(final String text, final String why) {
        return new IllegalArgumentException("invalid size '" + text + "'" + why + ": use a number of bytes or a"
            + " number with K, M, G, T or P (powers of 1024), e.g. 20G");
    }

    private static IllegalArgumentException tooLarge(final String text) {
        return new IllegalArgumentException("invalid size '" + text + "': it does not fit in 63 bits; volumes are at"
            + " most 4 EiB (2^62 bytes), e.g. 20G");
    }

    /**
     * A size for people: {@code 512 B}, {@code 20 GiB}, {@code 1.5 GiB}. Whole multiples of a unit show no
     * decimals; anything else shows one, rounded.
     */
    public static String format(final long bytes) {
        if (bytes < 1024) {
            return bytes + " B";
        }
        int unit = 0;
        double value = bytes / 1024.0;
        while (unit < FORMAT_UNITS.length() - 1 && Math.round(value * 10) >= 1024 * 10) {
            value /= 1024;
            unit++;
        }
        final double rounded = Math.round(value * 10) / 10.0;
        final String number = rounded == Math.rint(rounded) ? Long.toString((long) rounded)
            : String.format(Locale.ROOT, "%.1f", rounded);
        return number + " " + FORMAT_UNITS.charAt(unit) + "iB";
    }
}
