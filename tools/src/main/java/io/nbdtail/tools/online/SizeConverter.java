package io.nbdtail.tools.online;

import io.nbdtail.volume.Sizes;
import picocli.CommandLine;

/**
 * Parses a size option ({@code 20G}, {@code 512M}, bytes) with {@link Sizes#parse}, so that a malformed size is
 * a usage error (exit 2). A rate may end in {@code /s}: {@code 50M/s}.
 */
final class SizeConverter implements CommandLine.ITypeConverter<Long> {
    @Override
    public Long convert(final String value) {
        final String size = value.strip().endsWith("/s") ? value.strip().substring(0, value.strip().length() - 2)
            : value;
        try {
            return Sizes.parse(size);
        } catch (final IllegalArgumentException e) {
            throw new CommandLine.TypeConversionException(e.getMessage());
        }
    }
}
