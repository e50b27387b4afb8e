"""Word lists for the embedded benchmark vocabulary and corpus (written for this project)."""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    """Split a whitespace-separated block into a tuple, keeping first-seen order."""
    return tuple(dict.fromkeys(text.split()))


# General English, roughly most frequent first; these open the word part of the vocabulary.
COMMON = _words(
    """
    the of and to a in is it that for on with as was he his by at you be this are from i have
    or an they which one not but had she her all were there we been has their if would what so
    more will when who no can its about up out them into him do some than my could only then
    time other these two may like any over also new after did me most first our made well your
    such those just people very see way should because many through where much before down back
    still use how make even years being good same between both each now three us under while
    never here year last own another might must off around great part against since without
    again long little world know take work old life day right too does get place own come state
    four five six seven eight nine ten twenty hundred thousand million half once twice
    went going gone goes got give gave given find found think thought say said says tell told
    ask asked seem seems seemed feel feels felt look looks looked leave left keep kept let put
    show shows showed shown try tried trying turn turns turned call called want wants wanted
    need needs needed mean means meant become becomes became begin began begun run runs ran
    move moved play plays played live lives lived believe believed hold holds held bring
    brings brought happen happened write writes wrote written sit sat stand stood lose lost
    pay paid meet met include included continue continued set learn learned change changed
    lead leads led understand understood watch watched watching follow followed stop stopped
    create created speak spoke read allow allowed add added spend spent grow grew open opened
    walk walked win won offer offered remember remembered love loved loves consider considered
    appear appeared buy bought wait waited serve served die died send sent expect expected
    build built stay stayed fall fell cut reach kill killed remain remains remained suggest
    raise pass sell decide decided return explain hope hoped develop carry break broke broken
    receive agree support hit produce produced eat cover catch draw choose cause point listen
    laugh laughed laughing cry cried crying smile smiled smiling care cared sleep slept
    something nothing anything everything someone anyone everyone nobody somebody everybody
    thing things man men woman women child children boy girl boys girls friend friends mother
    father son daughter brother sister wife husband family home house room door window car
    road street city town country place places end ends side hand hands head face eyes eye
    voice word words name names night morning evening week weeks month months hour hours
    minute minutes second seconds moment moments way ways kind kinds sort lot lots number
    group problem problems question questions fact idea ideas reason reasons case point points
    money power war peace school water food money job body mind heart soul love hate fear hope
    truth lie lies death birth age ages history power level line lines form forms matter sense
    result results area areas example government company system program problem service
    business story stories game games book books art music film films movie movies show
    always often sometimes usually rarely seldom already almost nearly quite rather really
    simply just only even ever perhaps maybe probably certainly surely clearly obviously
    finally eventually suddenly quickly slowly together apart away ago later soon early late
    enough though although however yet whether either neither nor unless until upon within
    across along among behind below above beyond during inside outside toward towards via
    whose whom whatever whenever wherever why because since therefore thus instead indeed
    anyway otherwise besides meanwhile overall less least few fewer every several various
    certain whole entire real true false sure able unable possible impossible likely unlikely
    important different similar major minor main general special particular public private
    local national social human personal political economic natural physical free full empty
    high low hard easy best better worse worst big small large short tall young old new
    early late next last past present future open close dark light black white red blue green
    yellow gray grey brown pink purple golden silver hot cold warm cool
    don doesn didn isn wasn aren weren hasn haven hadn won wouldn couldn shouldn can ll ve re
    s t d m o
    mr mrs ms dr st vs etc
    """
)

# Adjectives that praise.
POSITIVE_ADJ = _words(
    """
    good great fine fun funny charming clever witty smart moving touching warm gentle lovely
    beautiful gorgeous stunning striking vivid rich lively bright fresh sharp tender sweet
    engaging absorbing gripping thrilling exciting riveting compelling powerful poignant
    haunting memorable remarkable extraordinary wonderful marvelous brilliant superb excellent
    terrific fantastic delightful enjoyable entertaining amusing hilarious playful inventive
    imaginative original ambitious bold daring confident assured elegant graceful subtle
    nuanced thoughtful intelligent insightful honest sincere genuine heartfelt affecting
    uplifting inspiring hopeful joyous exuberant spirited energetic buoyant breezy crisp taut
    suspenseful atmospheric evocative lyrical luminous radiant dazzling spectacular impressive
    accomplished polished masterful skillful deft solid sturdy satisfying rewarding refreshing
    unpretentious wry sly irreverent quirky offbeat whimsical unforgettable irresistible
    likable endearing lovable winning appealing captivating enchanting magical mesmerizing
    hypnotic transcendent profound resonant wise humane compassionate generous nimble
    crackling sparkling vibrant fearless unflinching authentic credible believable timely
    perceptive astute shrewd well-made big-hearted clear-eyed first-rate good-natured
    """
)

# Adjectives that pan.
NEGATIVE_ADJ = _words(
    """
    bad dull boring tedious tiresome tired stale flat lifeless limp lame weak thin shallow
    hollow empty vapid bland banal trite hackneyed predictable formulaic derivative generic
    forgettable pointless aimless meandering sluggish plodding slow lethargic overlong bloated
    messy sloppy muddled confused confusing incoherent clumsy awkward heavy ponderous
    pretentious smug overwrought melodramatic mawkish sappy schmaltzy syrupy saccharine
    manipulative cynical mean nasty ugly grim dreary bleak joyless humorless unfunny witless
    mindless silly stupid dumb idiotic inane ridiculous absurd laughable preposterous
    implausible contrived artificial phony hokey cheesy corny cheap shoddy shabby lazy
    careless inept incompetent amateurish clunky wooden stiff stilted leaden listless
    lackluster mediocre uninspired unimaginative unoriginal uninvolving unwatchable
    insufferable annoying irritating grating obnoxious tasteless crude vulgar repellent
    numbing exhausting excruciating painful dismal disappointing frustrating underwhelming
    pedestrian mechanical soulless charmless shapeless unfocused disjointed choppy uneven
    erratic sour wan anemic puerile juvenile tacky garish shrill noisy self-indulgent
    half-baked mean-spirited by-the-numbers ham-fisted
    """
)

# Adjectives with no verdict of their own.
NEUTRAL_ADJ = _words(
    """
    long short little big small young old new strange quiet dark familiar odd simple modern
    classic latest second final early recent human domestic political romantic historical
    musical animated comic dramatic gothic rural urban suburban teenage adult foreign
    independent low-budget big-budget sprawling intimate sweeping lengthy brief modest
    unusual curious peculiar earnest serious gentle dense talky stylized handsome glossy
    gritty grainy sunny rainy wintry violent bloody tragic tearful nostalgic literary
    autobiographical fictional mythic epic routine conventional experimental elaborate
    minimal
    """
)

# Things a review talks about.
NOUNS = _words(
    """
    film movie picture story plot script screenplay performance cast director filmmaker
    cinematographer screenwriter soundtrack score camerawork cinematography editing dialogue
    ending opening climax finale premise concept tale drama comedy thriller romance
    melodrama satire parody sequel remake adaptation documentary debut feature effort
    production material subject theme tone mood pacing rhythm energy humor wit charm heart
    spirit style imagery scene moment sequence joke twist narrative structure ensemble
    friendship marriage childhood journey adventure mystery experience spectacle exercise
    portrait study fable allegory romp caper farce fantasy western musical horror vision
    setup payoff subplot protagonist
    """
)

# Nouns that are a verdict in themselves ("a gem", "a mess").
POSITIVE_NOUNS = _words("gem treat delight triumph pleasure achievement joy marvel")
NEGATIVE_NOUNS = _words("mess bore chore slog misfire letdown disaster failure dud misstep")

# Parts an actor plays ("Moreau is terrific as the detective").
ROLES = _words(
    """
    lead hero heroine villain antagonist cop detective soldier singer painter boxer chef
    teacher priest gangster rebel monster ghost mother father widow stranger nurse lawyer
    """
)

# Plural nouns used as subjects ("the performances are ...").
PLURAL_NOUNS = _words(
    """
    performances actors characters scenes moments jokes gags laughs twists visuals images
    effects songs themes ideas set-pieces lines stakes emotions battles chases gunfights
    flashbacks subplots filmmakers writers stars leads villains heroes kids teenagers parents
    """
)

# Transitive verbs, third person singular: "the film [verb] a [adj] [noun]".
VERBS_3S = _words(
    """
    offers delivers captures explores presents finds creates builds shows tells paints
    serves manages earns embraces celebrates examines mocks skewers honors reveals
    recaptures juggles balances blends mixes weaves rewards challenges dramatizes imagines
    evokes sustains recalls mirrors echoes tackles lacks wastes squanders ruins mangles
    botches undermines smothers cheapens trivializes recycles borrows fumbles
    """
)

# Whole verb phrases that carry praise or scorn on their own.
POSITIVE_VP = (
    "works",
    "soars",
    "shines",
    "sparkles",
    "succeeds",
    "holds up",
    "pays off",
    "never lets up",
    "grows on you",
    "keeps you guessing",
    "earns its emotion",
    "hums along",
    "finds its footing",
    "gets under your skin",
    "lingers long after",
    "rings true",
    "comes alive",
    "hits the mark",
    "wins you over",
    "stays with you",
)
NEGATIVE_VP = (
    "drags",
    "falls flat",
    "goes nowhere",
    "misfires",
    "sputters",
    "wears thin",
    "runs out of steam",
    "never comes alive",
    "overstays its welcome",
    "feels forced",
    "collapses",
    "stalls",
    "rings false",
    "loses its way",
    "tries too hard",
    "misses the mark",
    "grinds to a halt",
    "goes through the motions",
    "falls apart",
    "plays it safe",
)

# Adverbs placed before adjectives.
ADVERBS = _words(
    """
    very really truly deeply thoroughly utterly wholly entirely genuinely remarkably
    surprisingly consistently wonderfully beautifully painfully terribly awfully hopelessly
    endlessly relentlessly oddly strangely curiously quietly sharply richly wildly fiercely
    frankly mostly largely slightly somewhat rather quite too so almost simply fairly pretty
    often undeniably unexpectedly admirably mercifully
    """
)

# Prepositional phrases with no verdict, to lengthen a clause.
PHRASE_TAILS = (
    "in the second half",
    "in the first act",
    "for most of its running time",
    "at every turn",
    "from the first frame",
    "in its final minutes",
    "on the big screen",
    "for a change",
    "by any measure",
    "despite the material",
    "with real conviction",
    "without a trace of irony",
    "in more ways than one",
    "on every level",
    "between the big scenes",
    "at the center of it all",
    "under the circumstances",
    "beneath the surface",
    "around the edges",
    "after a slow start",
)

PREPOSITIONS = _words("about with for from in on without")

# Openers that precede a clause ("Still, ...").
OPENERS = (
    "Still",
    "Sadly",
    "Happily",
    "Somehow",
    "Ultimately",
    "Frankly",
    "In the end",
    "At times",
    "For all its flaws",
    "Even so",
    "On the whole",
    "By the end",
    "As a comedy",
    "As drama",
    "In its best moments",
    "At its worst",
    "To its credit",
    "Unfortunately",
    "Fortunately",
    "Admittedly",
    "Like its hero",
    "Once again",
)

# Whole clauses, each a verdict in itself.
POSITIVE_CLAUSES = (
    "you'll leave the theater smiling",
    "it's worth seeing twice",
    "there's plenty to admire here",
    "I loved every minute of it",
    "the cast is uniformly excellent",
    "it's the best thing of its kind in years",
    "you can't help but smile",
    "it earns every laugh",
    "it never hits a false note",
    "it's a pleasure to watch",
    "the whole thing just works",
    "it deserves a wide audience",
    "nobody does this better",
    "I'd happily see it again",
)
NEGATIVE_CLAUSES = (
    "you'll be checking your watch",
    "I kept waiting for something to happen",
    "nobody involved seems to care",
    "there's no reason to see it",
    "it should have gone straight to video",
    "it's a chore to sit through",
    "the jokes land with a thud",
    "it never finds its rhythm",
    "you've seen it all before",
    "it's as dull as it sounds",
    "I couldn't wait for it to end",
    "the less said the better",
    "it isn't worth your time",
    "it doesn't add up to much",
)

# Phrases that end a sentence, of several token lengths.
CLOSERS = (
    ".",
    "!",
    "...",
    "too.",
    "though.",
    "overall.",
    "indeed.",
    "here.",
    "again.",
    "anyway.",
    "throughout.",
    "at all.",
    "in places.",
    "for once.",
    "as usual.",
    "at times.",
    "in the end.",
    "by the end.",
    "all the same.",
    "and then some.",
    "to be fair.",
    "on balance.",
    "for the most part.",
    "from start to finish.",
    "for better or worse.",
    "most of the time.",
    "if you ask me.",
    "on a second viewing.",
    ", to be honest.",
    ", more or less.",
    ", and it shows.",
    ", at least for now.",
    "in the best possible way.",
    "as far as it goes.",
    "at least in the moment.",
    ", and that's that.",
    "for what it's worth.",
    "in every sense of the word.",
    ", if nothing else.",
    ", whatever its flaws.",
    "in spite of everything.",
)

# First names and surnames, mostly common English, French, Spanish, Italian and German ones;
# several are deliberately missing from the vocabulary so they split into pieces.
FIRST_NAMES = _words(
    """
    Anna Maria Julia Clara Elena Sofia Laura Marta Nina Rosa Helen Grace Alice Emma Lucy
    Jack Tom Peter Paul David Daniel Michael Robert James Henry Leo Max Oscar Felix Victor
    Hugo Marco Luca Pablo Carlos Diego Jean Pierre Louis Hans Karl Ingrid Greta Astrid
    Brigitte Ottilie Thaddeus Ignatius Cornelius Evangeline Florentina
    """
)
SURNAMES = _words(
    """
    Smith Brown Miller Wilson Taylor Clark Walker Hall Young King Wright Green Baker Hill
    Moore White Martin Jackson Thompson Harris Lewis Scott Adams Nelson Carter Mitchell
    Roberts Turner Phillips Campbell Parker Evans Edwards Collins Stewart Morris Murphy Cook
    Rogers Morgan Bell Cooper Reed Bailey Kelly Howard Ward Cox Richardson Wood Watson
    Brooks Bennett Gray Hughes Price Sanders Russell Foster Butler Barnes Fisher Henderson
    Garcia Lopez Martinez Rossi Bianchi Moreau Laurent Dubois Schmidt Fischer Weber Becker
    Hoffmann Lindqvist Kowalczyk Okonkwo Szymanski Vanderhoeven Castellanos Abernathy
    Delacroix Haverbrook Quisenberry Zbornak Ferreira Nakagawa Oyelaran
    """
)

# Corpus words deliberately absent from the vocabulary, as rare words are from a real one:
# the WordPiece tokenizer splits them into several pieces.
RARE = _words(
    """
    unwatchable schmaltzy mawkish saccharine overwrought melodramatic unpretentious
    mesmerizing transcendent insufferable excruciating underwhelming amateurish uninvolving
    unimaginative charmless soulless lackluster hackneyed formulaic puerile anemic buoyant
    exuberant luminous lyrical whimsical irreverent unflinching compassionate endearing
    lovable perceptive shrewd cinematographer screenwriter filmmaker filmmakers camerawork
    dramatizes trivializes recaptures skewers botches squanders cheapens smothers juggles
    allegory romp caper subplots subplot flashbacks gunfights protagonist antagonist
    Lindqvist Kowalczyk Okonkwo Szymanski Vanderhoeven Castellanos Abernathy Delacroix
    Haverbrook Quisenberry Zbornak Oyelaran Nakagawa Ottilie Thaddeus Ignatius Cornelius
    Evangeline Florentina
    """
)

# Extra general words, so the vocabulary is not only about films.
EXTRA = _words(
    """
    ability absence academy accent access accident account act action active activity actual
    address admit adult advance advantage advice affair affect afford afraid afternoon agency
    agent air airport alive alone amount analysis ancient anger angle angry animal announce
    annual answer apartment apparent approach approve argue argument arm army arrive article
    artist aside asleep aspect assume attack attempt attend attention attitude audience
    author authority available average avoid award aware balance ball band bank bar base
    basic basis battle beach bear beat bed beer behavior belief bench benefit bird bit bite
    blame blind block blood blow board boat bone border born boss bottle bottom box brain
    branch brand bread breath bridge brief broad budget burn bus busy button cable calm
    campaign camp cancer candidate capital captain card career careful cash cat category
    ceiling cell center central century chain chair chairman challenge champion chance
    channel chapter charge chart cheap check cheek chest chicken chief choice church circle
    citizen civil claim class clean client climb clock closed cloth cloud club coach coast
    coat code coffee collect college color column combination comfort command comment
    commercial commission committee common community compare competition complete complex
    computer concern condition conference confidence conflict congress connect connection
    consumer contact contain content contest context contract control conversation cook
    copy corner cost couch count county courage course court cousin crazy credit crew crime
    crisis critic critical crop cross crowd cultural culture cup current customer cycle
    damage dance danger data date deal dear debate debt decade decision deep defense degree
    demand department deposit depth describe desert design desk detail device diet
    difference difficult dinner direction dirt discover discussion disease distance doctor
    document dollar double doubt dozen drama dress drink drive drop drug dry due duty earth
    east economy edge education effect egg election element emergency employee energy
    engine enjoy environment episode equal error escape essay estate event evidence exact
    exam excuse exercise exist exit expert explain eye fabric factor factory fail fair faith
    farm fashion fast fat fault favor feature federal fee field fight figure file final
    finance finger fire firm fish fit flat flight floor flow flower fly focus fold folk foot
    force forest forget forward frame freedom fresh front fruit fuel fund funny gain garden
    gas gate gather gift glass goal gold golf grade grand grass ground guard guess guest
    guide gun guy habit hair hall handle hang harm hat health hearing heat heavy height hell
    hello help hero hide highway hire hole holiday horse hospital host hotel huge hunt hurt
    ice ignore image impact income increase index industry inform injury insect instance
    interest internet interview iron island issue item jacket joint judge juice jump jury
    key kick kitchen knee knife lady lake land language laptop law lawyer layer leader league
    leg lesson letter library license lift limit link lip list load loan lock lunch machine
    magazine mail manager map market mask master match meal meat media medical member memory
    menu message metal method middle milk mirror mission mistake mix model moon mountain
    mouth nature neck neighbor network news newspaper nose note novel nurse object ocean
    office officer oil opinion option order organ owner pack page pain paint pair palace
    panel paper parent park partner party patient pattern peak pen pencil period permit
    phone photo phrase piano piece pilot pipe plan plane plant plate player pocket poem poet
    police policy pool port position post pot pound pressure price pride priest prince
    print prison prize process product profit project proof property protect proud pull
    punch purpose push queen quiet race radio rain range rate ratio reader reality record
    region relation release rent report rest restaurant review reward rice ring risk river
    rock role roof root rope rose round route rule rush safe salad salt sand scale schedule
    science screen sea season seat secret section security seed sentence series session
    shape share sheet shelf shell shift ship shirt shoe shop shot shoulder shower sign
    signal silence sing single sink skill skin sky slide slip smell smoke snow soil soldier
    solution song sound soup source south space speech speed spell spot spring square staff
    stage star station status steal step stock stomach stone storm strategy stress string
    strip student studio style sugar suit summer sun supply surface survey sweet swim switch
    table tail talent target task taste tax tea team tear temperature tennis term test text
    theory tie tip title tomorrow tongue tool tooth topic total touch tour tower track trade
    traffic train travel tree trial trick trip trouble truck trust tune type union unit
    university user valley value vehicle version video view village visit voice volume vote
    wage wall war warning wave weather wedding weight west wheel wind wine wing winter wish
    witness wonder wood worker writer yard youth zone
    """
)

# Word starts a WordPiece vocabulary keeps as whole-word entries.
PREFIXES = _words(
    """
    un over under dis re pre mis non out self super inter counter anti semi multi cinema
    tele photo auto mega micro mini ultra hyper post sub trans mid fore co ex
    """
)

# Subword pieces a WordPiece vocabulary learns for common endings (written without "##").
SUFFIXES = _words(
    """
    s es ed d ing ly er ers est ness ment ments able ible ful less ous ive ion ions ation
    ations ity ic ical al ish y ie ist ists ism ize ized izes ward like wood man men son ton
    ley ford berg stein ini ez ov ova ski sky a o i e in on an en ar or ia io ine ette ville
    land ham worth field ridge bury wick more gan ner ter ler der son sen berry well water
    ck ch sh th ph gh ng nd nt st rt rd ld lt mp nk ll ss tt pp ff rr nn mm graph grapher
    graphy writer maker makers tic tics atic ting ting ling ning ring ping ding zing izing
    """
)
