package clientstr

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	if got := Quote("a\x00b"); got != `"a\x00b"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("x", 10000)
	got := Quote(long)
	if len(got) > MaxLogged+40 || !strings.HasSuffix(got, "… (10000 bytes)") {
		t.Errorf("Quote(10000 bytes) = %s", got)
	}
	if QuoteBytes([]byte(long)) != got {
		t.Error("QuoteBytes and Quote differ")
	}
}
